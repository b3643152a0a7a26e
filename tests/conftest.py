pytest_plugins = ["tests.fixtures.backends", "tests.fixtures.service"] + (["tests.fixtures.pcsc"] if __import__("pathlib").Path(__file__).with_name("fixtures").joinpath("pcsc.py").exists() else [])
