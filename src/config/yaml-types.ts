// Values of YAML's own types (!!omap, !!set, !!timestamp, !!binary) in a config.
//
// The yaml library turns them into Map, Set, Date and Uint8Array, and zod's object schemas take
// any non-array object for a mapping: `policy: !!omap [{default: deny}]` passed as an empty
// mapping, so the policy silently became the default allow. None of these types means anything in
// a config, so every one of them is refused at its path, wherever it stands.

import { showValue } from './parsed';

export interface YamlTypedValue {
  /** Keys and list indexes from the document's root. */
  segments: Array<string | number>;
  /** How the value is named in messages ("a set (!!set)"). */
  shown: string;
}

function isYamlTyped(value: unknown): boolean {
  return value instanceof Map || value instanceof Set || value instanceof Date || value instanceof Uint8Array;
}

/** Every such value in a toJS() result, in document order (nothing inside one is listed). */
export function findYamlTypedValues(root: unknown): YamlTypedValue[] {
  const found: YamlTypedValue[] = [];
  // Iterative: the document's nesting is already bounded (MAX_YAML_DEPTH), but nothing here needs
  // the call stack.
  const pending: Array<{ value: unknown; segments: Array<string | number> }> = [{ value: root, segments: [] }];
  for (let next = pending.pop(); next !== undefined; next = pending.pop()) {
    const { value, segments } = next;
    if (isYamlTyped(value)) {
      found.push({ segments, shown: showValue(value) });
    } else if (Array.isArray(value)) {
      value.forEach((item: unknown, index) => pending.push({ value: item, segments: [...segments, index] }));
    } else if (typeof value === 'object' && value !== null) {
      for (const [key, item] of Object.entries(value)) pending.push({ value: item, segments: [...segments, key] });
    }
  }
  return found.reverse();
}

export function yamlTypedMessage(shown: string): string {
  return `got ${shown}: YAML's own types have no meaning in a config; write a plain mapping, list or scalar`;
}

/** Whether `inner` is `outer` or lies inside it. */
export function isAtOrBelow(inner: readonly PropertyKey[], outer: readonly PropertyKey[]): boolean {
  return outer.length <= inner.length && outer.every((segment, i) => segment === inner[i]);
}
