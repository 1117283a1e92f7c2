#!/usr/bin/env node
// Thin launcher: the CLI bundled into dist/cli/ (built by `npm ci` through the prepare script; see scripts/bundle.js).
import { main } from '../dist/cli/cli.js'
main(process.argv.slice(2)).then((code) => { process.exitCode = code })
