/**
 * Usage text of the admin commands, apart from them: the CLI prints it without loading the admin
 * API's client (the gateway process never needs it).
 */

/** Usage of the admin commands. */
export const usage = `  sluice status                    pools and upstreams of a running gateway: health, breaker, budgets, queue
  sluice breaker reset UPSTREAM    close an upstream's circuit breaker
  sluice upstream disable|enable ID
                                   take an upstream out of routing, or back in
  sluice reload                    reload the config file the gateway was started with`

/** Where the admin commands connect, and with what. */
export const connection = `status, breaker, upstream and reload call the admin API: --url URL (default SLUICE_URL, else
http://127.0.0.1:8080), with the token from the variable --token-env names (default SLUICE_ADMIN_TOKEN).`
