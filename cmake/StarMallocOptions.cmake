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

# The hardening preset fixes each policy's default (DESIGN.md, hardening table).
# Index:          none light default paranoid
set(_sm_policy_ZERO_ON_FREE          0 1 1 1)
set(_sm_policy_WRITE_AFTER_FREE_CHECK 0 0 1 1)
set(_sm_policy_CANARIES              0 1 1 1)
set(_sm_policy_RANDOMIZE_SLOTS       0 0 1 1)
set(_sm_policy_GUARD_INTERVAL        0 8 2 2)
set(_sm_policy_SLOT_QUARANTINE       0 0 1 1)
set(_sm_policy_SLAB_QUARANTINE       0 0 1 1)
set(_sm_policy_LARGE_GUARDS          0 1 1 1)
set(_sm_policy_LARGE_QUARANTINE      0 0 1 1)
list(FIND _sm_presets ${STARMALLOC_HARDENING} _sm_preset_index)
foreach(_p ZERO_ON_FREE WRITE_AFTER_FREE_CHECK CANARIES RANDOMIZE_SLOTS GUARD_INTERVAL
           SLOT_QUARANTINE SLAB_QUARANTINE LARGE_GUARDS LARGE_QUARANTINE)
  list(GET _sm_policy_${_p} ${_sm_preset_index} SM_POLICY_${_p})
endforeach()
if(STARMALLOC_HARDENING STREQUAL "none")
  set(SM_HARDENING_LEVEL 0)
elseif(STARMALLOC_HARDENING STREQUAL "light")
  set(SM_HARDENING_LEVEL 1)
elseif(STARMALLOC_HARDENING STREQUAL "default")
  set(SM_HARDENING_LEVEL 2)
else()
  set(SM_HARDENING_LEVEL 3)
endif()
