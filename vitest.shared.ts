/**
 * What every test project shares. Tests run the TypeScript sources of the @sluice/* packages, not
 * their build: the `@sluice/source` export condition picks `src/` (see each package's `exports`), so
 * an edit is tested without rebuilding `dist/`.
 */
const conditions = ["@sluice/source"]
export const ssr = { resolve: { conditions } }
