// Public surface of the config module.

export { parseConfigText, loadConfigFile } from './load';
export { defaultConfig, DEFAULT_CONFIG_SOURCE, DEFAULT_CONFIG_YAML } from './default';
export { ConfigError, formatProblems, type ConfigProblem } from './problems';
export { DEFAULTS } from './schema';
export { configWarnings, type ConfigWarning } from './warnings';
export type * from './types';
