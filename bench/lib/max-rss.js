// Preloaded by bench/backup.js (node --import): the process's peak resident set at exit, in KiB.
process.on('exit', () => process.stderr.write(`MP-MAX-RSS-KIB ${process.resourceUsage().maxRSS}\n`))
