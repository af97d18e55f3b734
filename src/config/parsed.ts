// The result of parsing one scalar config value (a duration, an address). A message instead of a
// thrown error, so the zod schema can turn it into one problem at the right path and carry on
// collecting the others.

export type Parsed<T> = { ok: true; value: T } | { ok: false; message: string };

/** Render a user-supplied value for an error message: strings quoted, everything else as JSON. */
export function showValue(value: unknown): string {
  if (value === undefined) return 'nothing';
  if (typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'number' || typeof value === 'boolean' || value === null) return String(value);
  if (Array.isArray(value)) return 'a list';
  // What YAML's own tags make (!!binary, !!set, !!omap, !!timestamp): name them, not "a mapping".
  if (value instanceof Uint8Array) return 'binary data (!!binary)';
  if (value instanceof Set) return 'a set (!!set)';
  if (value instanceof Map) return 'an ordered mapping (!!omap)';
  if (value instanceof Date) return 'a timestamp';
  if (typeof value === 'object') return 'a mapping';
  return typeof value;
}
