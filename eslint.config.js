// ESLint for the whole repository: TypeScript with type information (typescript-eslint's recommendedTypeChecked through
// the project service, so tsconfig.json decides what a file sees), plain JavaScript (scripts, bench, bin) without it.
// No rule is switched off for the repository: a line that must break one says why in an eslint-disable-next-line comment.
// test/unit/lint.test.ts runs this in the unit project, so `npm test` fails on a problem; `npm run lint` shows them.
import js from '@eslint/js'
import globals from 'globals'
import tseslint from 'typescript-eslint'

export default tseslint.config(
  { ignores: ['dist/', 'node_modules/', 'reports/', 'backups/', 'bench/.work/', 'bench/results/', '.cache/', '.sandbox/', '.sandbox-*/'] },
  js.configs.recommended,
  {
    files: ['**/*.ts'],
    extends: [tseslint.configs.recommendedTypeChecked],
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': 'error',
      // `_name` marks a parameter or binding that is there for its position (a callback's signature, a tuple), not for use.
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none' }],
    },
  },
  {
    files: ['**/*.js', '**/*.mjs'],
    languageOptions: { globals: { ...globals.node } },
    rules: { 'no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none' }] },
  },
)
