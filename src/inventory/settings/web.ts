/** Settings of what faces the web beside Synapse: Apache and TLS, Element, the Matrix Authentication Service. */
import { z } from 'zod'
import { controllerPath, dnsName, ELEMENT_VERSION, EMAIL, GENERATE, integer, pattern, port, secretRef, SHA256, url } from '../values.js'

const tlsSchema = z.strictObject({
  mode: z
    .enum(['self-signed', 'files', 'acme'], { error: 'expected "self-signed", "files" or "acme"' })
    .default('self-signed')
    .describe('self-signed: made on the host once; files: certificateFile and keyFile uploaded from this machine; acme: certbot'),
  certificateFile: controllerPath().optional(),
  keyFile: controllerPath().optional(),
  acmeEmail: pattern(EMAIL, 'expected an e-mail address such as admin@example.org')
    .optional()
    .describe('The ACME account address (mode acme)'),
  acmeServer: url().optional().describe("ACME directory URL (default Let's Encrypt; e.g. its staging, or a private CA such as step-ca)"),
  acmeCaFile: controllerPath()
    .optional()
    .describe("CA certificate(s) that sign the ACME server's own HTTPS certificate, for a private ACME server"),
})

export const apacheSchema = z.strictObject({
  tls: tlsSchema.prefault({}),
  delegation: z
    .enum(['well-known', 'port-8448'], { error: 'expected "well-known" or "port-8448"' })
    .default('well-known')
    .describe("well-known: /.well-known/matrix/* on the server name's vhost; port-8448: a federation vhost on 8448"),
  httpsPort: port().default(443),
  maxClients: integer(64, 100_000, 'expected a number of clients between 64 and 100000')
    .default(1000)
    .describe(
      'Requests Apache holds at once. Every connected client keeps a /sync long-poll open and mod_proxy holds one thread for it: size for the clients the server is meant to hold (mpm_event, memory checked before applying)',
    ),
})

export const elementSchema = z.strictObject({
  version: z
    .string({ error: 'expected an Element version in quotes, such as "1.11.85"' })
    .regex(ELEMENT_VERSION, { error: 'expected an Element version x.y.z, such as "1.11.85"' })
    .transform((version) => version.replace(/^v/, ''))
    .optional(),
  host: dnsName().optional().describe("Element's own vhost (default element.<serverName>); never the homeserver's"),
  url: url().optional().describe('Download URL (default: the GitHub release of version)'),
  file: controllerPath().optional().describe('A release tarball on this machine, uploaded to the host'),
  sha256: pattern(SHA256, 'expected a SHA-256 checksum (64 hexadecimal digits)')
    .transform((sum) => sum.toLowerCase())
    .optional(),
  signatureFile: controllerPath().optional().describe('Detached signature of the tarball on this machine'),
  signatureUrl: url().optional().describe('Detached signature of the tarball to download'),
  releaseKeyFile: controllerPath().optional().describe('The release key (on this machine) the signature is checked against'),
})

export const masSchema = z
  .strictObject({
    version: z
      .string({ error: 'expected a MAS version in quotes, such as "1.22.0"' })
      .regex(ELEMENT_VERSION, { error: 'expected a MAS version x.y.z, such as "1.22.0"' })
      .transform((version) => version.replace(/^v/, ''))
      .default('1.22.0'),
    host: dnsName().optional().describe("MAS's own vhost (default auth.<serverName>); its issuer is https://<host>/"),
    url: url().optional().describe('Release tarball to download (default: the GitHub release of version, mas-cli-x86_64-linux.tar.gz)'),
    file: controllerPath().optional().describe('The release tarball on this machine, uploaded instead of downloaded'),
    sha256: pattern(SHA256, 'expected a SHA-256 checksum (64 hexadecimal digits)')
      .transform((sum) => sum.toLowerCase())
      .optional()
      .describe('Checksum of the tarball (required: nothing is unpacked unverified)'),
    port: port().default(8080).describe('MAS listens on 127.0.0.1:<port>; Apache proxies to it'),
    healthPort: port().default(8081).describe('Internal listener (/health) on 127.0.0.1'),
    registration: z
      .enum(['closed', 'open', 'token'], { error: 'expected "closed", "open" or "token"' })
      .default('closed')
      .describe('Self-registration through MAS: closed, open, or with registration tokens (mas-cli manage issue-user-registration-token)'),
    loginRateLimit: z
      .strictObject({
        burst: integer(1, 100_000, 'expected a burst of logins (an integer 1-100000)').default(3),
        perSecond: z
          .number({ error: 'expected logins per second (a number > 0)' })
          .positive({ error: 'expected logins per second (a number > 0)' })
          .max(10_000)
          .default(0.05),
      })
      .prefault({})
      .describe('Password logins per client address and per account (MAS default: a burst of 3, then one per 20 s)'),
    databasePassword: secretRef('mas-postgres-password').default(GENERATE),
    synapseSecret: secretRef('mas-synapse-secret')
      .default(GENERATE)
      .describe('Shared by MAS and Synapse (matrix_authentication_service.secret)'),
    adminClientSecret: secretRef('mas-admin-client-secret')
      .default(GENERATE)
      .describe("Secret of the OAuth client that may call MAS's admin API on loopback (provision mas-user)"),
    encryptionSecret: secretRef('mas-encryption-secret')
      .default(GENERATE)
      .describe("MAS's encryption key is derived from it (64 hex digits): never change it once set"),
  })
  .describe('The Matrix Authentication Service (role mas): Element X logins, OAuth 2.0, registration')
