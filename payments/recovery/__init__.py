"""Recovery (issue 4): what happens to an order when its callback never comes.

`sweep.py` asks each created or pending order's channel about it when its check is due (and requested refunds about
theirs), applies what the channel confirms, closes orders past their expiry at the channel first, and backs off
while the channel cannot answer; `schedule.py` is its back-off (pure); `loop.py` runs it inside the service.
`authsvc payments sweep` runs it once (cron). See docs/payments.md, "Recovery".
"""
