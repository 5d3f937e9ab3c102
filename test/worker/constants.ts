// Shared by vitest.config.ts (the Worker's binding) and the emulator started in global-setup.ts.
export const STRIPE_WEBHOOK_SECRET = "whsec_berth_workerd_tests_0123456789abcdef";
