"""What every actor runs on: the supervisor, the periodic loop, messages, metrics, logs,
live state, CPU offload, the event loop, and loading the tools under `scripts/`.

Owns how actors are started, restarted and stopped, and the vocabulary they share.
May use `storage` (settings, outage and refusal rules) and `features`; no other
package of `actors`.
"""
