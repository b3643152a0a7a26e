"""OAuth clients: the portals, bank and platform back ends and resource servers registered with the provider."""
