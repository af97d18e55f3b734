// Envoy filter lists: each entry's "@type", and a walk over the entries whose type is known.

import type { Findings, Segment } from './findings';
import { isV2TypeUrl, NAME_ONLY } from './type-urls';
import { describe, isRecord } from './values';

/**
 * Calls fn for each entry of a filter list whose type is known (filterType reports the others),
 * with its typed_config ({} when it has none) and its path.
 */
export function forEachFilter(
  list: unknown[],
  path: Segment[],
  findings: Findings,
  fn: (type: string, config: Record<string, unknown>, fp: Segment[], f: unknown) => void,
): void {
  list.forEach((f: unknown, i) => {
    const fp = [...path, i];
    const type = filterType(f, fp, findings);
    if (type === undefined) return;
    fn(type, isRecord(f) && isRecord(f['typed_config']) ? f['typed_config'] : {}, fp, f);
  });
}

/** The filter's exact "@type" URL (or its canonical name, for the empty-config filters); undefined after an error. */
function filterType(f: unknown, path: Segment[], findings: Findings): string | undefined {
  if (!isRecord(f)) {
    findings.error(path, `expected a filter mapping, got ${describe(f)}`);
    return undefined;
  }
  if (f['config'] !== undefined) {
    findings.error([...path, 'config'], 'an Envoy v2 filter config ("config:"): only v3 bootstraps with typed_config are read');
    return undefined;
  }
  const tc = f['typed_config'];
  if (tc === undefined) {
    const byName = typeof f['name'] === 'string' ? NAME_ONLY[f['name']] : undefined;
    if (byName !== undefined) return byName;
    findings.error(path, `filter ${describe(f['name'])} has no typed_config with an "@type"`);
    return undefined;
  }
  const url = isRecord(tc) ? tc['@type'] : undefined;
  if (typeof url !== 'string') {
    findings.error([...path, 'typed_config'], 'expected a mapping with an "@type" URL');
    return undefined;
  }
  if (isV2TypeUrl(url)) {
    findings.error([...path, 'typed_config', '@type'], `${url} is an Envoy v2 type: only v3 bootstraps are read`);
    return undefined;
  }
  return url;
}
