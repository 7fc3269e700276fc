"""Benchmarks of veolia2mqtt: `python -m benchmarks` prints a table and writes JSON.

Each module measures one thing against the simulator (``veolia2mqtt/veolia/simulator.py``)
and, where a broker is needed, a real ``mosquitto`` spawned on a free loopback port:

* :mod:`benchmarks.requests_per_sync`: Veolia requests per daily sync, ours and the peer's.
* :mod:`benchmarks.logins`: Cognito sign-ins over a simulated week of restarts, password
  sign-ins and refresh renewals apart.
* :mod:`benchmarks.memory`: idle RSS of the real daemon and the import cost of each package.
* :mod:`benchmarks.startup`: process start to the first retained state on the broker.
* :mod:`benchmarks.cpu`: CPU time of parsing, rules and building as the account grows.
* :mod:`benchmarks.mqtt_messages`: MQTT messages per sync (first, unchanged, HA birth).

The method and a real run are in ``docs/performance.md``.
"""

from __future__ import annotations
