/**
 * The numbers of the NBD protocol (NetworkBlockDevice/nbd doc/proto.md) this server and
 * its client speak: the fixed-newstyle handshake and the simple-reply transmission phase.
 */

/** "NBDMAGIC", the server's first eight bytes. */
export const NBD_MAGIC = 0x4e42444d41474943n
/** "IHAVEOPT": the newstyle magic, and the magic of every option the client sends. */
export const IHAVEOPT = 0x49484156454f5054n
/** The magic of every option reply. */
export const OPTION_REPLY_MAGIC = 0x3e889045565a9n
export const REQUEST_MAGIC = 0x25609513
export const SIMPLE_REPLY_MAGIC = 0x67446698

// Handshake flags (server) and client flags.
export const FLAG_FIXED_NEWSTYLE = 1 << 0
export const FLAG_NO_ZEROES = 1 << 1
export const FLAG_C_FIXED_NEWSTYLE = 1 << 0
export const FLAG_C_NO_ZEROES = 1 << 1
export const KNOWN_CLIENT_FLAGS = FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES

// Transmission flags.
export const FLAG_HAS_FLAGS = 1 << 0
export const FLAG_READ_ONLY = 1 << 1
export const FLAG_SEND_FLUSH = 1 << 2
export const FLAG_SEND_FUA = 1 << 3
export const FLAG_ROTATIONAL = 1 << 4
export const FLAG_SEND_TRIM = 1 << 5
export const FLAG_SEND_WRITE_ZEROES = 1 << 6
export const FLAG_SEND_DF = 1 << 7
export const FLAG_CAN_MULTI_CONN = 1 << 8
export const FLAG_SEND_CACHE = 1 << 10
export const FLAG_SEND_FAST_ZERO = 1 << 11

// Options.
export const OPT_EXPORT_NAME = 1
export const OPT_ABORT = 2
export const OPT_LIST = 3
export const OPT_STARTTLS = 5
export const OPT_INFO = 6
export const OPT_GO = 7
export const OPT_STRUCTURED_REPLY = 8

// Option replies.
export const REP_ACK = 1
export const REP_SERVER = 2
export const REP_INFO = 3
export const REP_ERR_UNSUP = 2 ** 31 + 1
export const REP_ERR_POLICY = 2 ** 31 + 2
export const REP_ERR_INVALID = 2 ** 31 + 3
export const REP_ERR_UNKNOWN = 2 ** 31 + 6
export const REP_ERR_SHUTDOWN = 2 ** 31 + 7
export const REP_ERR_BLOCK_SIZE_REQD = 2 ** 31 + 8
export const REP_ERR_TOO_BIG = 2 ** 31 + 9

/** Whether an option reply type is an error (bit 31). */
export const isReplyError = (type: number): boolean => type >= 2 ** 31

// Information types (NBD_OPT_INFO / NBD_OPT_GO).
export const INFO_EXPORT = 0
export const INFO_NAME = 1
export const INFO_DESCRIPTION = 2
export const INFO_BLOCK_SIZE = 3

// Commands.
export const CMD_READ = 0
export const CMD_WRITE = 1
export const CMD_DISC = 2
export const CMD_FLUSH = 3
export const CMD_TRIM = 4
export const CMD_CACHE = 5
export const CMD_WRITE_ZEROES = 6
export const CMD_BLOCK_STATUS = 7

// Command flags.
export const CMD_FLAG_FUA = 1 << 0
export const CMD_FLAG_NO_HOLE = 1 << 1
export const CMD_FLAG_DF = 1 << 2
export const CMD_FLAG_REQ_ONE = 1 << 3
export const CMD_FLAG_FAST_ZERO = 1 << 4

// Errors in replies.
export const EPERM = 1
export const EIO = 5
export const ENOMEM = 12
export const EINVAL = 22
export const ENOSPC = 28
export const EOVERFLOW = 75
export const ENOTSUP = 95
export const ESHUTDOWN = 108

const ERROR_NAMES: Record<number, string> = {
  [EPERM]: "EPERM",
  [EIO]: "EIO",
  [ENOMEM]: "ENOMEM",
  [EINVAL]: "EINVAL",
  [ENOSPC]: "ENOSPC",
  [EOVERFLOW]: "EOVERFLOW",
  [ENOTSUP]: "ENOTSUP",
  [ESHUTDOWN]: "ESHUTDOWN"
}

/** `EINVAL` for 22; `error 99` for a value the spec does not define. */
export const errorName = (error: number): string => ERROR_NAMES[error] ?? `error ${error}`

const COMMAND_NAMES: Record<number, string> = {
  [CMD_READ]: "READ",
  [CMD_WRITE]: "WRITE",
  [CMD_DISC]: "DISC",
  [CMD_FLUSH]: "FLUSH",
  [CMD_TRIM]: "TRIM",
  [CMD_CACHE]: "CACHE",
  [CMD_WRITE_ZEROES]: "WRITE_ZEROES",
  [CMD_BLOCK_STATUS]: "BLOCK_STATUS"
}

export const commandName = (type: number): string => COMMAND_NAMES[type] ?? `command ${type}`

// Sizes of the fixed parts.
export const GREETING_BYTES = 18
export const OPTION_HEADER_BYTES = 16
export const OPTION_REPLY_HEADER_BYTES = 20
export const REQUEST_BYTES = 28
export const SIMPLE_REPLY_BYTES = 16
/** Reserved zeroes after the `NBD_OPT_EXPORT_NAME` answer, unless `NBD_FLAG_C_NO_ZEROES`. */
export const EXPORT_NAME_ZEROES = 124
/** The longest export name the spec allows (and the longest this server reads). */
export const MAX_NAME_BYTES = 4096
