/**
 * cdp-sync's pure core: geometry, the persistent bitmap, the decider
 * (`initialState`, `decide`, `evolve`), the legality rules, the trace codec, the
 * receiver's sequencing rules and a simulated world for property tests.
 * No I/O, no services, no clock.
 */
export * as Bitmap from "./Bitmap.js"
export * as Config from "./Config.js"
export * as Decider from "./Decider.js"
export * as Event from "./Event.js"
export * as Flight from "./Flight.js"
export * as Geometry from "./Geometry.js"
export * as Input from "./Input.js"
export * as Legality from "./Legality.js"
export * as Receiver from "./Receiver.js"
export * as State from "./State.js"
export * as Trace from "./Trace.js"
