/* vram.h compiles on its own as C11 with -Wall -Wextra -Wpedantic -Werror, and links with a
 * C++17 translation unit that includes it too (header_cxx17.cpp). */
#include "vram.h"

#include <stdio.h>
#include <string.h>

int cxx_side(void);

int main(void) {
    char version[32];
    snprintf(version, sizeof version, "%d.%d.%d", VRAM_VERSION_MAJOR, VRAM_VERSION_MINOR,
             VRAM_VERSION_PATCH);
    if (strcmp(version, vram_version()) != 0) {
        fprintf(stderr, "header says %s, library says %s\n", version, vram_version());
        return 1;
    }
    if (cxx_side() != 0) {
        return 1;
    }
    printf("vram.h: C11 and C++17 translation units agree on version %s\n", version);
    return 0;
}
