#!/usr/bin/env node
/** `midge-pub`: the same as `midge pub`. */
import { runTool } from "./runTool.js"

void runTool("pub", "midge-pub", process.argv.slice(2))
