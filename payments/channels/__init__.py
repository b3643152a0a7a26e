"""Payment channel wire formats and, later, the channel adapters built on them.

The modules here are pure: they turn bytes, headers and keys into typed events or signed requests and back, and
never touch the database, the network or a clock they were not given. Everything a channel sends us is untrusted
until one of these modules has verified it; anything they cannot verify or understand raises ChannelRefusal.
"""
