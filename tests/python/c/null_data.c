/* Null versus empty znode data through the ZooKeeper C client (libzookeeper_mt).
 * Usage: null_data HOST:PORT PATH
 * Prints one "STEP len=N dataLength=M" line per step; the Python test compares them. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zookeeper/zookeeper.h>

static void watcher(zhandle_t *zh, int type, int state, const char *path, void *ctx) {
    (void)zh; (void)type; (void)state; (void)path; (void)ctx;
}

static int get(zhandle_t *zh, const char *step, const char *path) {
    char buf[64];
    int len = sizeof(buf);
    struct Stat st;
    memset(buf, 'z', sizeof(buf));
    int rc = zoo_get(zh, path, 0, buf, &len, &st);
    if (rc != ZOK) {
        printf("%s error=%d\n", step, rc);
        return rc;
    }
    printf("%s len=%d dataLength=%d\n", step, len, st.dataLength);
    return ZOK;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s HOST:PORT PATH\n", argv[0]);
        return 2;
    }
    zoo_set_debug_level(ZOO_LOG_LEVEL_ERROR);
    zhandle_t *zh = zookeeper_init(argv[1], watcher, 10000, 0, 0, 0);
    if (!zh) {
        perror("zookeeper_init");
        return 1;
    }
    /* Bounded wait for the session: 100 x 100 ms. */
    for (int i = 0; i < 100 && zoo_state(zh) != ZOO_CONNECTED_STATE; i++)
        usleep(100 * 1000);
    if (zoo_state(zh) != ZOO_CONNECTED_STATE) {
        fprintf(stderr, "not connected\n");
        return 1;
    }
    const char *path = argv[2];
    char empty_path[512];
    snprintf(empty_path, sizeof(empty_path), "%s-empty", path);
    int rc = zoo_create(zh, path, NULL, -1, &ZOO_OPEN_ACL_UNSAFE, 0, NULL, 0);
    printf("create-null rc=%d\n", rc);
    get(zh, "after-create-null", path);
    rc = zoo_create(zh, empty_path, "", 0, &ZOO_OPEN_ACL_UNSAFE, 0, NULL, 0);
    printf("create-empty rc=%d\n", rc);
    get(zh, "after-create-empty", empty_path);
    rc = zoo_set(zh, path, "ab", 2, -1);
    printf("set-bytes rc=%d\n", rc);
    get(zh, "after-set-bytes", path);
    rc = zoo_set(zh, path, NULL, -1, -1);
    printf("set-null rc=%d\n", rc);
    get(zh, "after-set-null", path);
    rc = zoo_set(zh, path, "", 0, -1);
    printf("set-empty rc=%d\n", rc);
    get(zh, "after-set-empty", path);
    zoo_delete(zh, path, -1);
    zoo_delete(zh, empty_path, -1);
    zookeeper_close(zh);
    return 0;
}
