/* What bindgen reads: libxdp, libbpf and sluice's own C declarations. */
#include <linux/if_link.h>
#include <linux/if_xdp.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <xdp/libxdp.h>
#include <xdp/xsk.h>
#include "sluice_xdp.h"
#include "xsk_shim.h"
