// Shared by vitest.config.ts (the Worker's binding) and the emulator started in global-setup.ts.
export const STRIPE_WEBHOOK_SECRET = "whsec_berth_workerd_tests_0123456789abcdef";
/** The Cloudflare DNS emulator's one token and zone (the DNS tests set them; other tests keep no records). */
export const CLOUDFLARE_DNS_API_TOKEN = "workerd_tests_cloudflare_dns_token_0123456789";
export const CLOUDFLARE_ZONE_ID = "0123456789abcdef0123456789abcdef";
