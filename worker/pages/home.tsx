import { Layout, SECURITY_PATH, type Viewer } from "./layout";

export function HomePage(props: { viewer: Viewer | null }) {
  return (
    <Layout title="Managed Matrix homeservers" viewer={props.viewer}>
      <section class="hero">
        <h1>Your own Matrix homeserver, run for you.</h1>
        <p>
          Berth runs a private Synapse homeserver for you in a US region, upgrades it, watches its health and backs it up every day. Use it with Element or any
          Matrix client.
        </p>
        <p>
          <a class="button" href={props.viewer ? "/account" : "/signup"}>
            {props.viewer ? "Go to your account" : "Get started"}
          </a>
        </p>
      </section>
      <section aria-labelledby="promises">
        <h2 id="promises">What we promise</h2>
        <ul class="promises">
          <li>Private chats and DMs are end-to-end encrypted by default; we hold only ciphertext.</li>
          <li>Each homeserver runs in its own isolated environment, with HTTPS everywhere.</li>
          <li>Daily encrypted backups, kept for 30 days.</li>
          <li>Passwords are hashed with a memory-hard function; sessions are signed with rotating keys.</li>
          <li>Stripe processes cards; card data never touches our servers.</li>
        </ul>
        <p>
          <a href={SECURITY_PATH}>Read every promise on our security page</a>, with how we keep each one.
        </p>
      </section>
    </Layout>
  );
}
