{
  "targets": [
    {
      "target_name": "ipc_ckpt",
      "sources": ["<!@(node -p \"require('./native/sources.json').join(' ')\")"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NODE_ADDON_API_DISABLE_DEPRECATED"],
      "cflags_cc!": ["-fno-exceptions"],
      "cflags_cc": ["-std=c++17", "-fexceptions", "-Wall", "-Wextra"]
    },
    {
      "target_name": "ipc-ckpt-guardian",
      "type": "executable",
      "sources": ["<!@(node -p \"require('./native/guardian-sources.json').join(' ')\")"],
      "cflags_cc": ["-std=c++17", "-Wall", "-Wextra"],
      # It starts on every restore and most saves: no libstdc++ to load and relocate.
      "ldflags": ["-static-libstdc++", "-static-libgcc"]
    }
  ]
}
