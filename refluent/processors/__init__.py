"""Pure transforms and the engines that run them: CDC unwrapping, windowed feature views."""
