"""Sandbox simulators of the payment channels: each one speaks its channel's wire format over HTTP (signed answers,
signed and encrypted callbacks, statements) with faults on request, so the adapters in payments/channels/ are tested
over real HTTP and a service can be pointed at one (`python -m payments.sandbox.<channel> --port N`).

Test and development tooling only: a sandbox generates and prints its own keys.
"""
