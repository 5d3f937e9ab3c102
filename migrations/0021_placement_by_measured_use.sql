ALTER TABLE `hosts` ADD `memory_available_mib` integer;--> statement-breakpoint
ALTER TABLE `hosts` ADD `tight_since` integer;--> statement-breakpoint
ALTER TABLE `servers` ADD `measured_memory_mib` integer;--> statement-breakpoint
ALTER TABLE `servers` ADD `memory_measured_since` integer;--> statement-breakpoint
CREATE INDEX `servers_reserved_on_host_idx` ON `servers` (`reserved_on_host_id`);