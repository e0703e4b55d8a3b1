/** Bytes as an operator reads them in logs and reports: `12.5 MiB`. */
export const mib = (bytes: number): string => `${(bytes / 2 ** 20).toFixed(1)} MiB`
