"""``wsmon --demo``: the embedded AWS stand-in (moto_server.py), the seeded world (worksets.py, data/) and the run (run.py)."""
