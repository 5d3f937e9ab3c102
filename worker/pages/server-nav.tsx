/** The pages of one homeserver, in the order its sub-navigation lists them. */
export type ServerSection = "overview" | "users" | "registration" | "rooms" | "settings" | "security" | "export";

const SECTIONS: { section: ServerSection; label: string; path: (id: string) => string }[] = [
  { section: "overview", label: "Overview", path: (id) => `/servers/${id}` },
  { section: "users", label: "Users", path: (id) => `/servers/${id}/users` },
  { section: "registration", label: "Registration", path: (id) => `/servers/${id}/registration` },
  { section: "rooms", label: "Rooms", path: (id) => `/servers/${id}/rooms` },
  { section: "settings", label: "Settings", path: (id) => `/servers/${id}/settings` },
  { section: "security", label: "Security", path: (id) => `/servers/${id}/security` },
  { section: "export", label: "Export", path: (id) => `/servers/${id}/export` },
];

/** The sub-navigation every page of a homeserver shows, the current one marked for assistive technology too. */
export function ServerNav(props: { serverId: string; current: ServerSection }) {
  return (
    <nav aria-label="Homeserver" class="tabs server-nav">
      {SECTIONS.map(({ section, label, path }) => (
        <a href={path(props.serverId)} aria-current={section === props.current ? "page" : undefined}>
          {label}
        </a>
      ))}
    </nav>
  );
}
