"""Linux IMA runtime integrity: measurement lists, PCR 10 replay, incremental state, policies.

Pure core (bytes and parsed policy in, result or typed error out), in the order an
attestation uses it:

- ``parse``: the binary or ASCII measurement list into ``ImaLog`` (every template hash checked).
- ``replay``: the entries extended into PCR 10 of the quoted bank, both kernel behaviours;
  ``boot_aggregate`` against the quoted PCRs 0-7 / 0-9.
- ``incremental``: per device and boot, the count of accepted entries and the running PCR 10,
  so an attestation costs what is new; ``ImaLogRequired`` asks for the whole log.
- ``policy`` (model, evaluation), ``section`` (the golden YAML ``runtime:`` section),
  ``keys`` (IMA signature v2), ``keylime`` (import), ``learn`` (a policy from a good log),
  ``appraise`` (all of it for one attestation).
"""
