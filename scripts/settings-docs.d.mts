// Types of scripts/settings-docs.mjs for test/unit/settings-docs.test.ts.
export const BEGIN: string
export const END: string
export function renderSettingsTable(schema: Record<string, unknown>): string
export function withSettingsTable(readme: string, table: string): string
