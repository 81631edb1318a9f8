/** Anthropic's error classes, shared by the simulator's dialect and whoever answers in Anthropic's envelope. */

/** Anthropic's error `type` for an HTTP status (`overloaded_error` for 529, `api_error` for other 5xx). */
export const errorType = (status: number): string => {
  switch (status) {
    case 400:
      return "invalid_request_error"
    case 401:
      return "authentication_error"
    case 403:
      return "permission_error"
    case 404:
      return "not_found_error"
    case 413:
      return "request_too_large"
    case 429:
      return "rate_limit_error"
    case 529:
      return "overloaded_error"
    default:
      return status >= 500 ? "api_error" : "invalid_request_error"
  }
}
