# The gateway image of the self-managed path: the pinned Envoy release with the plugin baked in at
# the path the rendered config loads (/etc/envoy/wasm/plugin.wasm). Runs on any Kubernetes version
# (the image volume of components/plugin-image-volume needs 1.35+). `./build.sh package` writes the
# build context (this file as Dockerfile, plugin.wasm and its sha256) to target/package/wis-envoy/
# and builds the image when docker or podman is on PATH; otherwise:
#   docker build -t REGISTRY/wis-envoy:TAG target/package/wis-envoy
#   gcloud builds submit --tag REGISTRY/wis-envoy:TAG target/package/wis-envoy
FROM docker.io/envoyproxy/envoy:v1.40.0
COPY plugin.wasm plugin.wasm.sha256 /etc/envoy/wasm/
# Refuse to build an image whose module is not the one package.sh hashed.
RUN cd /etc/envoy/wasm && sha256sum -c plugin.wasm.sha256
# The pod runs as this numeric user too (runAsNonRoot); the module is world-readable.
USER 65532:65532
