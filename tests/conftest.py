pytest_plugins = ["tests.fixtures.backends", "tests.fixtures.service", "tests.fixtures.pcsc", "tests.fixtures.oidc"]
