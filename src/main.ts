#!/usr/bin/env node
/**
 * The Midge daemon's entry point (`node dist/main.js`). It holds the young generation small
 * before anything else is loaded (runtime/YoungGeneration.ts: loading the modules is what would
 * grow it), then loads the daemon itself (daemon.ts).
 */
import { holdYoungGeneration } from "./runtime/YoungGeneration.js"

holdYoungGeneration(process.env.MIDGE_YOUNG_GEN)
void import("./daemon.js")
