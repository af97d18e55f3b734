// Host names in the config (admin.allowed_hosts): one accepted shape and one canonical spelling,
// shared by the schema that checks them and the admin server that compares requests against them.

/** An `admin.allowed_hosts` entry that allows every name. */
export const ANY_HOST = '*';

/** A host name as the config accepts it (RFC 1123 labels; a trailing dot allowed). */
export const HOST_NAME_RE = /^(?=.{1,253}\.?$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*\.?$/i;

/** The one spelling a name is compared in: lower case, no trailing dot. */
export function canonicalHostName(name: string): string {
  const lower = name.toLowerCase();
  return lower.endsWith('.') ? lower.slice(0, -1) : lower;
}
