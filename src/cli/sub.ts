#!/usr/bin/env node
/** `midge-sub`: the same as `midge sub`. */
import { runTool } from "./runTool.js"

void runTool("sub", "midge-sub", process.argv.slice(2))
