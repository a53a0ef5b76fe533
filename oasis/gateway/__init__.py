"""The Spark Connect gateway: one gRPC endpoint for every project's Spark clusters. It authenticates the stock
Spark Connect client's bearer token with the identity backend, finds the cluster the `x-oasis-cluster` header
names within the token's project, and forwards the RPCs, as raw bytes, to that cluster's own Spark Connect server
(oasis/plugins/spark.py) through the cluster's Remote: directly on the `local` site, through a forwarded SSH port
elsewhere. It keeps no session: Spark Connect's sessions live in the cluster's server, and the client reattaches
to its running operations, so a gateway restarted (or another replica) loses none. Engine side: it reaches
hosts, so the API process never imports it."""
