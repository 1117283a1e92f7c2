#!/usr/bin/env node
// Thin launcher: the CLI bundled into dist/cli/ (built by `npm ci` through the prepare script; see scripts/bundle.js).
import cli from '../dist/cli/cli.js'
cli.main(process.argv.slice(2)).then((code) => { process.exitCode = code })
