# Every build option of StarMalloc, checked here so that a wrong value stops the
# configuration with a message that says what is allowed.

set(STARMALLOC_ARENAS 4 CACHE STRING "Number of arenas (1..256)")
set(STARMALLOC_SIZE_CLASSES "starmalloc" CACHE STRING
    "Size classes: a preset (starmalloc, fine) or an ascending list of multiples of 16, e.g. 16;32;48;64")
set(STARMALLOC_HARDENING "default" CACHE STRING "Hardening preset: none, light, default or paranoid")
set_property(CACHE STARMALLOC_HARDENING PROPERTY STRINGS none light default paranoid)

if(NOT STARMALLOC_ARENAS MATCHES "^[0-9]+$" OR STARMALLOC_ARENAS LESS 1 OR STARMALLOC_ARENAS GREATER 256)
  message(FATAL_ERROR "STARMALLOC_ARENAS='${STARMALLOC_ARENAS}': must be a whole number from 1 to 256")
endif()

set(_sm_presets none light default paranoid)
if(NOT STARMALLOC_HARDENING IN_LIST _sm_presets)
  message(FATAL_ERROR "STARMALLOC_HARDENING='${STARMALLOC_HARDENING}': must be one of none, light, default, paranoid")
endif()

# The hardening preset fixes each policy's default (DESIGN.md, hardening table); each policy
# has its own option that overrides the preset when set. Values:
#   ZERO_ON_FREE, WRITE_AFTER_FREE_CHECK, CANARIES, RANDOMIZE_SLOTS: 0 or 1
#   GUARD_INTERVAL: 0 (off) or N = one guard slab after every N slabs (1..64)
#   SLOT_QUARANTINE: 0 (off) or slots per quarantine stage per (arena, class) (1..1024)
#   SLAB_QUARANTINE: 0 (off) or emptied slabs held per (arena, class) (1..1024)
#   LARGE_GUARDS: 0 (off), 1 (one guard page on each side), 2 (a random 1..16 pages each side)
#   LARGE_QUARANTINE: 0 (off) or freed large mappings held (1..1024)
# Index:                              none light default paranoid
set(_sm_policy_ZERO_ON_FREE           0    1     1       1)
set(_sm_policy_WRITE_AFTER_FREE_CHECK 0    0     1       1)
set(_sm_policy_CANARIES               0    1     1       1)
set(_sm_policy_RANDOMIZE_SLOTS        0    0     1       1)
set(_sm_policy_GUARD_INTERVAL         0    8     2       2)
set(_sm_policy_SLOT_QUARANTINE        0    0     32      128)
set(_sm_policy_SLAB_QUARANTINE        0    0     16      64)
set(_sm_policy_LARGE_GUARDS           0    1     1       2)
set(_sm_policy_LARGE_QUARANTINE       0    0     32      128)
set(_sm_policy_max_ZERO_ON_FREE 1)
set(_sm_policy_max_WRITE_AFTER_FREE_CHECK 1)
set(_sm_policy_max_CANARIES 1)
set(_sm_policy_max_RANDOMIZE_SLOTS 1)
set(_sm_policy_max_GUARD_INTERVAL 64)
set(_sm_policy_max_SLOT_QUARANTINE 1024)
set(_sm_policy_max_SLAB_QUARANTINE 1024)
set(_sm_policy_max_LARGE_GUARDS 2)
set(_sm_policy_max_LARGE_QUARANTINE 1024)
set(STARMALLOC_POLICIES ZERO_ON_FREE WRITE_AFTER_FREE_CHECK CANARIES RANDOMIZE_SLOTS GUARD_INTERVAL
    SLOT_QUARANTINE SLAB_QUARANTINE LARGE_GUARDS LARGE_QUARANTINE)

list(FIND _sm_presets ${STARMALLOC_HARDENING} _sm_preset_index)
set(STARMALLOC_EFFECTIVE_POLICIES "")
foreach(_p IN LISTS STARMALLOC_POLICIES)
  set(STARMALLOC_${_p} "" CACHE STRING "Override the ${STARMALLOC_HARDENING} preset's ${_p} (empty: preset)")
  list(GET _sm_policy_${_p} ${_sm_preset_index} SM_POLICY_${_p})
  if(NOT STARMALLOC_${_p} STREQUAL "")
    if(STARMALLOC_${_p} STREQUAL "ON")
      set(_v 1)
    elseif(STARMALLOC_${_p} STREQUAL "OFF")
      set(_v 0)
    else()
      set(_v ${STARMALLOC_${_p}})
    endif()
    if(NOT _v MATCHES "^[0-9]+$" OR _v GREATER _sm_policy_max_${_p})
      message(FATAL_ERROR "STARMALLOC_${_p}='${STARMALLOC_${_p}}': must be a whole number from 0 to "
                          "${_sm_policy_max_${_p}} (or empty for the preset's value)")
    endif()
    set(SM_POLICY_${_p} ${_v})
  endif()
  string(APPEND STARMALLOC_EFFECTIVE_POLICIES " ${_p}=${SM_POLICY_${_p}}")
endforeach()
if(SM_POLICY_WRITE_AFTER_FREE_CHECK AND NOT SM_POLICY_ZERO_ON_FREE)
  message(FATAL_ERROR "STARMALLOC_WRITE_AFTER_FREE_CHECK=1 needs STARMALLOC_ZERO_ON_FREE=1 "
                      "(the check verifies that a freed slot is still zero)")
endif()

# Tuning, not a policy: large objects of 2 MiB and more ask for transparent huge pages, in
# every preset (empty, the default, means ON).
set(STARMALLOC_LARGE_HUGE_PAGES "" CACHE STRING
    "Back large objects of 2 MiB and more with transparent huge pages: ON, OFF or empty (ON)")
if(STARMALLOC_LARGE_HUGE_PAGES MATCHES "^(ON|1|)$")
  set(SM_LARGE_HUGE_PAGES 1)
elseif(STARMALLOC_LARGE_HUGE_PAGES MATCHES "^(OFF|0)$")
  set(SM_LARGE_HUGE_PAGES 0)
else()
  message(FATAL_ERROR "STARMALLOC_LARGE_HUGE_PAGES='${STARMALLOC_LARGE_HUGE_PAGES}': must be ON, OFF "
                      "or empty (ON)")
endif()

# Not a policy: how guard slabs and quarantined slabs are made to trap. ON uses the kernel's
# lightweight guard markers where it has them (Linux 6.13+, not under strict overcommit) and
# PROT_NONE mappings elsewhere; OFF always uses PROT_NONE mappings. Same protection either way.
option(STARMALLOC_GUARD_MARKERS
       "Guard and quarantine slabs with lightweight guard markers (madvise MADV_GUARD_INSTALL) where the kernel has them"
       ON)
if(STARMALLOC_GUARD_MARKERS)
  set(SM_GUARD_MARKERS 1)
else()
  set(SM_GUARD_MARKERS 0)
endif()

# Tuning, not a policy: without slab quarantine, emptied slabs are retained for reuse by their
# class and go back to the kernel once unused for this many milliseconds (or earlier when new
# memory is taken while too much is retained); 0 gives them back as they empty, beyond a few
# kept per (arena, class). No effect with slab quarantine, whose emptied slabs it holds.
set(STARMALLOC_RETAINED_DECAY_MS 1000 CACHE STRING
    "Without slab quarantine: milliseconds an emptied slab stays retained unused before it goes back to the kernel (0: at once)")
if(NOT STARMALLOC_RETAINED_DECAY_MS MATCHES "^[0-9]+$" OR STARMALLOC_RETAINED_DECAY_MS GREATER 3600000)
  message(FATAL_ERROR "STARMALLOC_RETAINED_DECAY_MS='${STARMALLOC_RETAINED_DECAY_MS}': must be a whole "
                      "number of milliseconds from 0 to 3600000")
endif()
set(SM_RETAINED_DECAY_MS ${STARMALLOC_RETAINED_DECAY_MS})

if(STARMALLOC_HARDENING STREQUAL "none")
  set(SM_HARDENING_LEVEL 0)
elseif(STARMALLOC_HARDENING STREQUAL "light")
  set(SM_HARDENING_LEVEL 1)
elseif(STARMALLOC_HARDENING STREQUAL "default")
  set(SM_HARDENING_LEVEL 2)
else()
  set(SM_HARDENING_LEVEL 3)
endif()
