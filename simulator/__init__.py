"""fleet-attest's simulator: swtpm devices with synthetic measured boot, and fleet scenarios."""

import os

# swtpm is started (fork + exec) while gRPC threads run; gRPC then logs a harmless notice per
# fork at INFO level. Keep the simulator's output to what matters unless asked otherwise.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
