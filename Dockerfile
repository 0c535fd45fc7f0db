# ipc-ckpt's own image: the addon is built inside (stage "build"), the runtime stage carries only what runs.
#   docker build -t ipc-ckpt .                                   official Node base (needs Docker Hub and npm)
#   docker build --build-arg BASE_IMAGE=ipc-ckpt-local/node-build-base:latest -t ipc-ckpt .   offline base,
#     made by scripts/docker-base-image.sh from the host's packages (CI does this; only npm must be reachable)
# Run it against another container's namespace (it needs the host's /proc and CAP_SYS_ADMIN):
#   docker run --rm --pid=host --privileged -v "$PWD:/data" ipc-ckpt save --ns /proc/PID/ns/ipc -o /data/q.img
ARG BASE_IMAGE=node:20-bookworm-slim

FROM ${BASE_IMAGE} AS build
# node-gyp needs python3, make and g++: the official slim image lacks them, the local CI base has them.
RUN if ! command -v g++ >/dev/null || ! command -v make >/dev/null || ! command -v python3 >/dev/null; then \
      apt-get update && apt-get install -y --no-install-recommends g++ make python3 && rm -rf /var/lib/apt/lists/*; \
    fi
WORKDIR /opt/ipc-ckpt
COPY package.json package-lock.json ./
# Scripts wait until the sources are here; the lockfile pins every dependency.
RUN npm ci --ignore-scripts --no-audit --no-fund
# The addon first: TypeScript changes more often and then reuses this layer.
COPY binding.gyp ./
COPY native ./native
# Build against node's own headers (PREFIX/include/node), so node-gyp downloads nothing.
RUN npm_config_nodedir="$(dirname "$(dirname "$(command -v node)")")" npx node-gyp rebuild
COPY tsconfig.json tsconfig.build.json ./
COPY lib ./lib
COPY bin ./bin
COPY scripts/bundle-cli.js ./scripts/bundle-cli.js
RUN npx tsc -p tsconfig.build.json && node scripts/bundle-cli.js \
    && npm prune --omit=dev --no-audit --no-fund \
    && node bin/ipc-ckpt.js --help >/dev/null

FROM ${BASE_IMAGE}
WORKDIR /opt/ipc-ckpt
COPY --from=build /opt/ipc-ckpt/package.json ./package.json
COPY --from=build /opt/ipc-ckpt/node_modules ./node_modules
COPY --from=build /opt/ipc-ckpt/build/Release/ipc_ckpt.node ./build/Release/ipc_ckpt.node
COPY --from=build /opt/ipc-ckpt/build/Release/ipc-ckpt-guardian ./build/Release/ipc-ckpt-guardian
COPY --from=build /opt/ipc-ckpt/dist/lib ./dist/lib
COPY --from=build /opt/ipc-ckpt/bin ./bin
ENTRYPOINT ["node", "/opt/ipc-ckpt/bin/ipc-ckpt.js"]
CMD ["--help"]
