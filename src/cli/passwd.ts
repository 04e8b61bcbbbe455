#!/usr/bin/env node
/** `midge-passwd`: the same as `midge passwd`. */
import { runTool } from "./runTool.js"

void runTool("passwd", "midge-passwd", process.argv.slice(2))
