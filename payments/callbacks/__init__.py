"""The callbacks inbox: verified channel notifications recorded once and applied to their order in one transaction."""
