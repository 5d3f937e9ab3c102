ALTER TABLE `servers` ADD `plan_id` text DEFAULT 'starter' NOT NULL;--> statement-breakpoint
ALTER TABLE `servers` ADD `status` text DEFAULT 'provisioning' NOT NULL;--> statement-breakpoint
ALTER TABLE `servers` ADD `status_reason` text;--> statement-breakpoint
ALTER TABLE `servers` ADD `synapse_version` text;--> statement-breakpoint
ALTER TABLE `servers` ADD `updated_at` integer DEFAULT 0 NOT NULL;