/* The public header must compile alone as strict C99 (see CMakeLists.txt:
 * -std=c99 -Wall -Wextra -pedantic -Werror). Nothing else is included. */
#include <multifrost.h>
