# The plugin as a Wasm OCI image: one layer holding plugin.wasm, the layout Istio WasmPlugin,
# Envoy Gateway EnvoyExtensionPolicy and Google Cloud Service Extensions read. `./build.sh package`
# writes the same image as an OCI layout without any container engine (manifests/tools/oci_layout.py);
# this file is for those who build with one. Build context: the directory holding plugin.wasm:
#   docker buildx build --platform wasip1/wasm -f manifests/images/plugin.Dockerfile -t REGISTRY/wis-plugin:TAG DIR
FROM scratch
COPY plugin.wasm /plugin.wasm
# Never executed (a scratch image has no entrypoint); stated so static checks see a non-root user.
USER 65532:65532
