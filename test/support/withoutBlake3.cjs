// Preloaded (`node --require`) into a CLI process under test: it acts as one on a platform
// without @napi-rs/blake-hash's prebuilt binary, whose load fails there as here.
const Module = require("node:module")
const load = Module._load
Module._load = function (request, ...rest) {
  if (request === "@napi-rs/blake-hash" || request.startsWith("@napi-rs/blake-hash-"))
    throw new Error(`Cannot find module '${request}' (test: no binary for this platform)`)
  return load.call(this, request, ...rest)
}
