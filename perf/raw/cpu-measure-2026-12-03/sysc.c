#define _GNU_SOURCE
#include <stdio.h>
#include <unistd.h>
#include <time.h>
#include <sys/syscall.h>
#include <pthread.h>
#include <sched.h>
#include <poll.h>
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
int p1[2],p2[2];
void *peer(void*a){char c;for(;;){if(read(p1[0],&c,1)!=1)break;if(write(p2[1],&c,1)!=1)break;}return 0;}
int main(){
  cpu_set_t s;CPU_ZERO(&s);CPU_SET(1,&s);sched_setaffinity(0,sizeof s,&s);
  int N=1000000;double t=now();for(int i=0;i<N;i++)syscall(SYS_getppid);double d=now()-t;
  printf("getppid syscall: %.0f ns\n",d/N*1e9);
  struct pollfd pf={.fd=0,.events=0};
  t=now();for(int i=0;i<N/10;i++)poll(&pf,1,0);d=now()-t;printf("poll(1 fd, 0): %.0f ns\n",d/(N/10)*1e9);
  pipe(p1);pipe(p2);pthread_t th;pthread_create(&th,0,peer,0);
  pthread_setaffinity_np(th,sizeof s,&s);
  char c='x';int M=100000;t=now();for(int i=0;i<M;i++){write(p1[1],&c,1);read(p2[0],&c,1);}d=now()-t;
  printf("pipe round trip same CPU (2 switches + 4 syscalls): %.0f ns\n",d/M*1e9);
  struct timespec ts={0,1000};int K=20000;t=now();for(int i=0;i<K;i++)nanosleep(&ts,0);d=now()-t;
  printf("nanosleep(1us) wall per call: %.0f ns\n",d/K*1e9);
  return 0;}
