# Use ccache when it is installed: libtorch headers make every translation unit slow, and
# rebuilds after small changes are common. The sloppiness settings let ccache cache
# translation units that use the precompiled torch header.
find_program(DISTILL_CCACHE ccache)
if(DISTILL_CCACHE AND NOT CMAKE_CXX_COMPILER_LAUNCHER)
  set(CMAKE_CXX_COMPILER_LAUNCHER ${CMAKE_COMMAND} -E env
    "CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime"
    ${DISTILL_CCACHE})
endif()
