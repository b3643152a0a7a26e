"""The real-person (实人) check through a face-liveness vendor (docs/liveness.md).

* vendor.py: the vendor adapter interface (LivenessVendor), its errors and the typed Verdict;
* wire.py: the generic vendor's wire format (signed requests, answers and callbacks); generic.py: its adapter;
* setup.py: the vendor of this process, built from settings and its rotatable keys in keys/channel_keys/;
* models.py, repository.py: the durable record of every liveness session and its verdict;
* rules.py: what a verdict means (threshold, duplicates, contradictions, late ones), pure;
* verdicts.py: applying a verified verdict; endpoints.py: the vendor's callback and the browser's start route;
* photos.py: the cardholder's reference photo id; commands.py: `authsvc cardholder set-photo`, `authsvc sandbox
  liveness`; sandbox.py: a vendor simulator with faults on request.
The face as a login method is authsvc/login/face.py.
"""
