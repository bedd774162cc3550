/* Baseline for `intercloud-bench xmpp`: a raw libstrophe client pair in one context on one thread.
 * B answers every IQ get from its stanza callback (the fastest libstrophe can do); A measures
 * sequential round trips and pipelined throughput with WINDOW requests in flight.
 *
 *   strophe_pair HOST PORT JID_A PASS_A JID_B PASS_B SEQUENTIAL PIPELINED WINDOW [EXCHANGE]
 *
 * EXCHANGE is what goes over the wire:
 *   status (default)  the brokers' own exchange, byte for byte in content: A asks
 *                     <status xmlns='urn:intercloud:presence:0'/>, B answers with the announcement
 *                     the benchmark's broker B sends (cloud bench-b, region bench, load 0, no
 *                     fingerprint). Same stanzas, so the server does the same work for both sides
 *                     of the comparison and the ratio measures the client stacks alone.
 *   ping              XEP-0199 ping and an empty result: the smallest exchange (the baseline
 *                     before 2026-12-07; Prosody spends ~25 % less per round trip on it).
 * Prints: "seq_us <v1> <v2> ..." then "pipelined_rps <value>".
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <strophe.h>

static xmpp_ctx_t *ctx;
static xmpp_conn_t *conn_a, *conn_b;
static int online = 0, sequential, pipelined, window_size, sent = 0, done = 0, phase = 0;
static double *latencies, started_at, pipe_start;
static char jid_b[512];
static int exchange_status = 1;

static double now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static void send_request(void) {
    char id[32];
    snprintf(id, sizeof id, "r%d", sent++);
    xmpp_stanza_t *iq = xmpp_iq_new(ctx, "get", id);
    xmpp_stanza_set_to(iq, jid_b);
    xmpp_stanza_t *ping = xmpp_stanza_new(ctx);
    if (exchange_status) {
        xmpp_stanza_set_name(ping, "status");
        xmpp_stanza_set_ns(ping, "urn:intercloud:presence:0");
    } else {
        xmpp_stanza_set_name(ping, "ping");
        xmpp_stanza_set_ns(ping, "urn:xmpp:ping");
    }
    xmpp_stanza_add_child_ex(iq, ping, 0);
    xmpp_send(conn_a, iq);
    xmpp_stanza_release(iq);
}

static int answer(xmpp_conn_t *conn, xmpp_stanza_t *stanza, void *userdata) {
    (void)userdata;
    const char *type = xmpp_stanza_get_type(stanza);
    if (!type || strcmp(type, "get") != 0) return 1;
    xmpp_stanza_t *reply = xmpp_iq_new(ctx, "result", xmpp_stanza_get_id(stanza));
    xmpp_stanza_set_to(reply, xmpp_stanza_get_from(stanza));
    if (exchange_status) {
        /* <announce xmlns='urn:intercloud:presence:0' version='0' cloud='bench-b' load='0.0'
         *  fingerprint=''><region>bench</region></announce>, as broker B answers. */
        xmpp_stanza_t *announce = xmpp_stanza_new(ctx);
        xmpp_stanza_set_name(announce, "announce");
        xmpp_stanza_set_ns(announce, "urn:intercloud:presence:0");
        xmpp_stanza_set_attribute(announce, "version", "0");
        xmpp_stanza_set_attribute(announce, "cloud", "bench-b");
        xmpp_stanza_set_attribute(announce, "load", "0.0");
        xmpp_stanza_set_attribute(announce, "fingerprint", "");
        xmpp_stanza_t *region = xmpp_stanza_new(ctx);
        xmpp_stanza_set_name(region, "region");
        xmpp_stanza_t *text = xmpp_stanza_new(ctx);
        xmpp_stanza_set_text(text, "bench");
        xmpp_stanza_add_child_ex(region, text, 0);
        xmpp_stanza_add_child_ex(announce, region, 0);
        xmpp_stanza_add_child_ex(reply, announce, 0);
    }
    xmpp_send(conn, reply);
    xmpp_stanza_release(reply);
    return 1;
}

static int result(xmpp_conn_t *conn, xmpp_stanza_t *stanza, void *userdata) {
    (void)conn; (void)userdata;
    const char *type = xmpp_stanza_get_type(stanza);
    const char *id = xmpp_stanza_get_id(stanza);
    /* Only our requests (ids "r<n>"), not libstrophe's own bind/session results. */
    if (!type || strcmp(type, "result") != 0 || !id || id[0] != 'r') return 1;
    if (phase == 0) {
        latencies[done++] = now_us() - started_at;
        if (done < sequential) { started_at = now_us(); send_request(); }
        else { phase = 1; done = 0; sent = 0; pipe_start = now_us();
               for (int i = 0; i < window_size && sent < pipelined; i++) send_request(); }
    } else {
        done++;
        if (sent < pipelined) send_request();
        if (done == pipelined) phase = 2;
    }
    return 1;
}

static void on_conn(xmpp_conn_t *conn, xmpp_conn_event_t status, int error, xmpp_stream_error_t *se, void *userdata) {
    (void)error; (void)se; (void)userdata;
    if (status == XMPP_CONN_CONNECT) {
        xmpp_stanza_t *presence = xmpp_presence_new(ctx);
        xmpp_send(conn, presence);
        xmpp_stanza_release(presence);
        online++;
    } else if (phase < 2) { fprintf(stderr, "connection failed\n"); exit(2); }
}

static int nodelay(xmpp_conn_t *conn, void *sock) { return xmpp_sockopt_cb_keepalive(conn, sock); }

int main(int argc, char **argv) {
    if (argc < 10) { fprintf(stderr, "usage\n"); return 2; }
    if (argc > 10) {
        if (strcmp(argv[10], "ping") == 0) exchange_status = 0;
        else if (strcmp(argv[10], "status") != 0) { fprintf(stderr, "EXCHANGE is status or ping\n"); return 2; }
    }
    sequential = atoi(argv[7]); pipelined = atoi(argv[8]); window_size = atoi(argv[9]);
    latencies = calloc(sequential, sizeof(double));
    snprintf(jid_b, sizeof jid_b, "%s", argv[5]);
    xmpp_initialize();
    ctx = xmpp_ctx_new(NULL, getenv("STROPHE_DEBUG") ? xmpp_get_default_logger(XMPP_LEVEL_DEBUG) : NULL);
    conn_a = xmpp_conn_new(ctx); conn_b = xmpp_conn_new(ctx);
    xmpp_conn_t *conns[2] = {conn_a, conn_b};
    for (int i = 0; i < 2; i++) {
        xmpp_conn_set_flags(conns[i], XMPP_CONN_FLAG_DISABLE_TLS | XMPP_CONN_FLAG_DISABLE_SM);
        xmpp_conn_set_sockopt_callback(conns[i], nodelay);
    }
    xmpp_conn_set_jid(conn_a, argv[3]); xmpp_conn_set_pass(conn_a, argv[4]);
    xmpp_conn_set_jid(conn_b, argv[5]); xmpp_conn_set_pass(conn_b, argv[6]);
    xmpp_handler_add(conn_b, answer, NULL, "iq", NULL, NULL);
    xmpp_handler_add(conn_a, result, NULL, "iq", NULL, NULL);
    xmpp_connect_client(conn_a, argv[1], (unsigned short)atoi(argv[2]), on_conn, NULL);
    xmpp_connect_client(conn_b, argv[1], (unsigned short)atoi(argv[2]), on_conn, NULL);
    while (online < 2) xmpp_run_once(ctx, 1);
    for (int i = 0; i < 20; i++) xmpp_run_once(ctx, 1); /* let presence settle */
    started_at = now_us();
    send_request();
    /* timeout 0 + select inside run_once; a 1 ms select timeout is libstrophe's own loop. */
    while (phase < 2) xmpp_run_once(ctx, 1);
    double elapsed = (now_us() - pipe_start) / 1e6;
    printf("seq_us");
    for (int i = 0; i < sequential; i++) printf(" %.1f", latencies[i]);
    printf("\npipelined_rps %.1f\n", pipelined / elapsed);
    xmpp_disconnect(conn_a); xmpp_disconnect(conn_b);
    for (int i = 0; i < 50; i++) xmpp_run_once(ctx, 1);
    return 0;
}
