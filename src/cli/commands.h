/* commands.h — one function per `kvlab SUBCOMMAND`; each parses its own options
 * (argv[0] is the subcommand name) and returns the process exit status. */
#ifndef KVLAB_COMMANDS_H
#define KVLAB_COMMANDS_H

int cmd_info(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_logits(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_synth(int argc, char **argv);
int cmd_convert(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_trace(int argc, char **argv);
int cmd_view(int argc, char **argv);
int cmd_correlate(int argc, char **argv);
int cmd_ppl(int argc, char **argv);
int cmd_passkey(int argc, char **argv);
int cmd_needle(int argc, char **argv);

#endif
