"""The cardholder registry: cardholders, their cards, and the kiosk terminals allowed to log them in."""
