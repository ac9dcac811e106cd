"""blockradar's benchmarks (issue 7): ``python -m bench [--quick] [--json-only]``.

One module per job: ``streams`` builds the byte streams, ``feeder`` is the PBX (and webhook
receiver) in another process, ``ami`` / ``esl`` measure the connectors against the stock
libraries, ``engine`` the pipeline, ``memory`` RSS per key, ``latency`` hangup-to-webhook time,
``report`` the table and the JSON line. See bench/README.md.
"""
